from spinbot.cli import main

main()
