from scifed.cli import main

main()
