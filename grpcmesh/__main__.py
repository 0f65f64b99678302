from grpcmesh.cli import main

raise SystemExit(main())
