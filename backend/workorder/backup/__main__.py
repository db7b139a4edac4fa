from workorder.backup.cli import main

raise SystemExit(main())
