"""The dashboard: a small backend-for-frontend that serves the page and proxies its API calls."""
