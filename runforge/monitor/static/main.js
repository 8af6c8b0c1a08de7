// runforge dashboard: picks the page from the URL.
"use strict";

token();
if (location.pathname.startsWith("/run/")) runView(decodeURIComponent(location.pathname.slice(5)));
else if (location.pathname === "/compare") compareView();
else if (location.pathname === "/hparams") hparamsView();
else runsView();
