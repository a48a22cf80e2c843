"""`python -m splip_engine` = the `splip-engine` command."""
from splip_engine.cli import main

main()
