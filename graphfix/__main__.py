from graphfix import cli

raise SystemExit(cli.main())
