"""The bundle on disk (format 3): manifest and segment files (format), opening a bundle
(read), write transactions and publishing (write), labels, compaction and checks
(maintenance). See docs/architecture.md."""
