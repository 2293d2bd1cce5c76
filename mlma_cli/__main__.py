from mlma_cli.cli.main import main

main()
