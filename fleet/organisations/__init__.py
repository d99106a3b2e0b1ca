"""Organisations (issue 18): the switcher, the page of organisations and the `fleet org`
commands. The isolation itself is the store's (fleet/store/scope.py); which scope a web request
gets is fleet/web/scoping.py, and `fleet --org NAME` sets the CLI's (fleet/console.py)."""
