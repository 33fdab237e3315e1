"""analysis stage of avprobe."""
