"""stimuli stage of avprobe."""
