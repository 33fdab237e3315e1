"""models stage of avprobe."""
