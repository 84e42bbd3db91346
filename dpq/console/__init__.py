"""The web console a gateway serves with ``--http-listen``: a page and its JSON API.

:mod:`dpq.console.api` answers the requests (over :mod:`dpq.services.http`);
``static/`` holds the page (plain HTML, CSS and JavaScript: no build step, no
external fetch), shipped as package data.
"""
