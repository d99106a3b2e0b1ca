"""Over-the-air updates: signed releases, staged rollouts, their API, pages and commands."""
