from stars_edge.cli import main

main()
