from vidseq.cli import main

raise SystemExit(main())
