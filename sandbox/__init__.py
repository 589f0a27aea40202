"""The sandbox side: code that runs in the isolated process (the runner and its training loop)."""
