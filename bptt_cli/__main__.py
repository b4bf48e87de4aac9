from bptt_cli.entry import main

main()
