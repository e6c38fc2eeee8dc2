from physiofm.cli import main

main()
