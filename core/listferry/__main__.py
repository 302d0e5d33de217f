from listferry.cli import main

main()
