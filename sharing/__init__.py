"""sharing: publishing versioned sharing sets and serving them to subscribers."""
