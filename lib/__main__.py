"""`./review ...` entry point."""
from lib.cli import main

if __name__ == "__main__":
    main()
