from reasonalign.cli import main

main()
