"""One module per `tamis` subcommand; each defines `add_parser(subparsers)`."""
