from equigen.cli import main

main()
