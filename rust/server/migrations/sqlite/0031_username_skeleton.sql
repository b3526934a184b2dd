-- Look-alike usernames (`admin` / `аdmin` with a Cyrillic а / `ａｄｍｉｎ`) share one key: the UTS #39
-- confusable skeleton of the case-folded NFKC name (auth::users::username_skeleton). The unique
-- index makes the rule hold under concurrent registrations. NULL only for rows the server has not
-- backfilled yet (it does at start) and for old look-alikes of an existing account.
ALTER TABLE users ADD COLUMN username_skeleton TEXT;
CREATE UNIQUE INDEX users_project_skeleton ON users(project_id, username_skeleton);
