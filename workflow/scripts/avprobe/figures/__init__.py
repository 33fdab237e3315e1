"""figures stage of avprobe."""
