from avsr.cli import main

raise SystemExit(main())
