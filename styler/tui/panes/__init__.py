"""One pane per tab of the dashboard."""
