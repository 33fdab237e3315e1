"""avprobe: probing audio-visual foundation models, one Snakemake stage at a time.

The package holds all logic; the entry scripts in ``workflow/scripts`` only read
``snakemake.input/output/params/log`` and call one function from here.
"""

__version__ = "0.2.0"
