"""askflow: grounded answers from your docs, Slack threads and GitHub issues, with cited sources."""
