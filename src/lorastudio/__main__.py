from lorastudio.cli import main

main()
