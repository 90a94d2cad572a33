from netlab.bench import main

raise SystemExit(main())
