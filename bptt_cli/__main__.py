from bptt_cli.cli.app import main

main()
