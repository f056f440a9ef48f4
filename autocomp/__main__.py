from autocomp.console import main

main()
