"""Organisations (issue 18): which organisation a request acts for, the switcher, the operator's
page of organisations and the `fleet org` commands. The isolation itself is the store's
(fleet/store/scope.py); this package only decides which scope a request or a command gets."""
