-- Several nodes (issue #8) take a board period's next `seq` from SQL: one index lookup.
CREATE INDEX lb_entries_seq ON lb_entries (project_id, board_id, period, seq);
