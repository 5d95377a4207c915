from pstyle.cli import main

main()
