extends HBoxContainer
## Leaderboard screen: submit a score, read the top entries page by page, the entries around
## the player, or the player and their friends, through AeThexCloud.social.leaderboards.
## The board must exist on the server: scripts/demo-social-setup defines "high_scores".

const RANGES := ["global", "around_me", "friends"]
const PERIODS := ["current", "previous"]
const PAGE_SIZE := 10

## Cursors of the pages read so far, so "Previous page" can go back; "" is the first page.
var _cursors: Array[String] = [""]
var _next_cursor := ""

# By name, not as the global `AeThexCloud`: on a project's first open the Godot 4.3 editor parses
# scripts before the extension has registered the singleton ("Identifier not found").
var _cloud = Engine.get_singleton("AeThexCloud")

@onready var _board_edit: LineEdit = %BoardEdit
@onready var _range_option: OptionButton = %RangeOption
@onready var _period_option: OptionButton = %PeriodOption
@onready var _entry_list: ItemList = %EntryList
@onready var _page_label: Label = %PageLabel
@onready var _me_label: Label = %MeLabel
@onready var _score_spin: SpinBox = %ScoreSpin
@onready var _note_edit: LineEdit = %NoteEdit
@onready var _prev_button: Button = %PrevButton
@onready var _next_button: Button = %NextButton
@onready var _status_label: Label = %StatusLabel


func _ready() -> void:
	for range_name in RANGES:
		_range_option.add_item(range_name)
	for period in PERIODS:
		_period_option.add_item(period)
	_range_option.item_selected.connect(_on_filter_changed.unbind(1))
	_period_option.item_selected.connect(_on_filter_changed.unbind(1))
	_board_edit.text_submitted.connect(_on_filter_changed.unbind(1))
	%RefreshButton.pressed.connect(_on_filter_changed)
	%SubmitButton.pressed.connect(_on_submit_pressed)
	_prev_button.pressed.connect(_on_prev_pressed)
	_next_button.pressed.connect(_on_next_pressed)
	_cloud.social.leaderboards.score_submitted.connect(_on_score_submitted)
	_on_filter_changed()


func _on_submit_pressed() -> void:
	var board := _board()
	var score := int(_score_spin.value)
	var note := _note_edit.text.strip_edges()
	_status_label.text = "Submitting %d to %s..." % [score, board]
	var result
	if note.is_empty():
		result = await _cloud.social.leaderboards.submit_score(board, score)
	else:
		# Metadata is stored with the score and shown next to it in every entry.
		var metadata := {"note": note, "date": Time.get_date_string_from_system()}
		var boards = _cloud.social.leaderboards
		result = await boards.submit_score_with_metadata(board, score, metadata)
	if not result.success:
		_show_error("Submit failed", result.error)
		return
	_load_page()


func _on_score_submitted(board: String, entry: Dictionary) -> void:
	_status_label.text = "%s: your score is %d, rank %d." % [board, entry.score, entry.rank]


func _on_filter_changed() -> void:
	_cursors = [""]
	_load_page()


func _on_prev_pressed() -> void:
	if _cursors.size() > 1:
		_cursors.pop_back()
		_load_page()


func _on_next_pressed() -> void:
	if not _next_cursor.is_empty():
		_cursors.append(_next_cursor)
		_load_page()


func _load_page() -> void:
	var range_name: String = RANGES[_range_option.selected]
	var options := {
		"range": range_name,
		"limit": PAGE_SIZE if range_name != "around_me" else 4,
		"period": PERIODS[_period_option.selected],
	}
	if range_name == "global" and not _cursors.back().is_empty():
		options["cursor"] = _cursors.back()
	var leaderboard = await _cloud.social.leaderboards.get(_board(), options)
	_entry_list.clear()
	if not leaderboard.success:
		_next_cursor = ""
		_update_paging(range_name)
		_show_error("Reading %s failed" % _board(), leaderboard.error)
		return
	var my_id := _my_user_id()
	for entry in leaderboard:
		var note = entry.metadata.get("note", "") if entry.metadata is Dictionary else ""
		var line := "#%d  %s  %d" % [entry.rank, entry.username, entry.score]
		if not str(note).is_empty():
			line += "  (%s)" % note
		var index := _entry_list.add_item(line)
		if entry.user_id == my_id:
			_entry_list.set_item_custom_fg_color(index, Color(1, 0.85, 0.3))
	_next_cursor = str(leaderboard.next_cursor) if leaderboard.next_cursor != null else ""
	_update_paging(range_name)
	_page_label.text = (
		"%d players this period%s" % [leaderboard.total, _reset_text(leaderboard.next_reset_at)]
	)
	var me = leaderboard.me
	_me_label.text = (
		"You: rank %d with %d" % [me.rank, me.score] if me is Dictionary else "You: no score yet"
	)
	_status_label.text = ""


func _update_paging(range_name: String) -> void:
	_prev_button.disabled = range_name != "global" or _cursors.size() <= 1
	_next_button.disabled = range_name != "global" or _next_cursor.is_empty()


func _board() -> String:
	var board := _board_edit.text.strip_edges()
	return board if not board.is_empty() else "high_scores"


func _my_user_id() -> String:
	var user = _cloud.auth.get_current_user()
	return str(user.get("id", "")) if user is Dictionary else ""


func _reset_text(next_reset_at: Variant) -> String:
	if next_reset_at == null:
		return ""
	var when := Time.get_datetime_string_from_unix_time(int(next_reset_at / 1000), true)
	return "; resets %s UTC" % when


func _show_error(what: String, error: Dictionary) -> void:
	var hint := ""
	if error.get("code", "") == "not_found":
		hint = " Run scripts/demo-social-setup to define the demo boards."
	_status_label.text = (
		"%s: %s (%s).%s" % [what, error.get("message", ""), error.get("code", ""), hint]
	)
