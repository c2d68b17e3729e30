"""The command line: `sqlifier` and `deploy-cli`. Only this package prints and exits."""
