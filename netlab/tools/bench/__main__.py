from netlab.tools.bench import main

raise SystemExit(main())
