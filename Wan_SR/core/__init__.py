"""Bottom layer of PS-SR: option dataclasses (the one home of every default), window math,
devices and dtypes, atomic file writes and logging/progress set-up. Imports nothing of Wan_SR."""
