from kubespin.cli import main

main()
