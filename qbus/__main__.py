from qbus.cli import main

main()
