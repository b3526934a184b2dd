extends HBoxContainer
## Save-slot screen: save, load, list, delete, history and restore through AeThexCloud.saves,
## background sync, and the dialog answering conflict_detected (conflict_strategy = "manual" in
## project.godot).

const CONFLICT_TEXT := (
	"Slot %s was saved on another device.\n\nThis device: %s\nCloud: %s\n\n"
	+ "The version you do not keep stays in the slot's history."
)

var _position := Vector3.ZERO
## Slot names in SlotList order, and version numbers in HistoryList order.
var _slot_names: Array[String] = []
var _versions: Array[int] = []
## Conflicts waiting for the dialog, each [slot, local, remote].
var _conflicts: Array = []

# By name, not as the global `AeThexCloud`: on a project's first open the Godot 4.3 editor parses
# scripts before the extension has registered the singleton ("Identifier not found").
var _cloud = Engine.get_singleton("AeThexCloud")

@onready var _slot_list: ItemList = %SlotList
@onready var _quota_label: Label = %QuotaLabel
@onready var _history_list: ItemList = %HistoryList
@onready var _slot_edit: LineEdit = %SlotEdit
@onready var _level_spin: SpinBox = %LevelSpin
@onready var _position_label: Label = %PositionLabel
@onready var _color_picker: ColorPickerButton = %ColorPicker
@onready var _auto_sync_check: CheckButton = %AutoSyncCheck
@onready var _loaded_label: Label = %LoadedLabel
@onready var _loaded_text: TextEdit = %LoadedText
@onready var _status_label: Label = %StatusLabel
@onready var _conflict_dialog: ConfirmationDialog = %ConflictDialog


func _ready() -> void:
	%RefreshButton.pressed.connect(_refresh_slots)
	%DeleteButton.pressed.connect(_on_delete_pressed)
	%RestoreButton.pressed.connect(_on_restore_pressed)
	%MoveButton.pressed.connect(_on_move_pressed)
	%SaveButton.pressed.connect(_on_save_pressed)
	%LoadButton.pressed.connect(_on_load_pressed)
	%SyncNowButton.pressed.connect(_on_sync_now_pressed)
	_slot_list.item_selected.connect(_on_slot_selected)
	_auto_sync_check.button_pressed = _cloud.saves.get_sync_status() != "disabled"
	_auto_sync_check.toggled.connect(_on_auto_sync_toggled)
	_conflict_dialog.confirmed.connect(_resolve_conflict.bind(true))
	_conflict_dialog.canceled.connect(_resolve_conflict.bind(false))

	_cloud.saves.save_completed.connect(_on_save_completed)
	_cloud.saves.save_failed.connect(_on_save_failed)
	_cloud.saves.conflict_detected.connect(_on_conflict_detected)
	_cloud.saves.conflict_resolved.connect(_on_conflict_resolved)

	_update_position_label()
	_refresh_slots()


func _on_save_pressed() -> void:
	var slot := _slot()
	var state := {
		"level": int(_level_spin.value),
		"position": _position,
		"color": _color_picker.color,
		"inventory": ["sword", "shield", "potion"],
		"checkpoint": NodePath("World/Checkpoints/Gate"),
	}
	# Metadata is shown by list() and history() without downloading the data.
	var metadata := {"level": int(_level_spin.value)}
	_status_label.text = "Saving %s..." % slot
	var result = await _cloud.saves.save_with_metadata(slot, state, metadata)
	if not result.success:
		_show_error("Save failed", result.error)
		return
	if result.queued:
		_status_label.text = "Saved %s on this device; it uploads when online." % slot
	else:
		_status_label.text = "Saved %s as version %s." % [slot, result.version]
	_refresh_slots()


func _on_load_pressed() -> void:
	var slot := _slot()
	_status_label.text = "Loading %s..." % slot
	var loaded = await _cloud.saves.load(slot)
	if not loaded.success:
		_show_error("Load failed", loaded.error)
		return
	# Godot types come back as they were saved: position is a Vector3, color a Color.
	var data: Dictionary = loaded.data
	_level_spin.value = data.get("level", 1)
	_position = data.get("position", Vector3.ZERO)
	_color_picker.color = data.get("color", _color_picker.color)
	_update_position_label()
	var source := " (offline copy)" if loaded.from_cache else ""
	_loaded_label.text = "Loaded %s version %s%s" % [slot, loaded.version, source]
	_loaded_text.text = var_to_str(data)
	_status_label.text = ""


func _on_delete_pressed() -> void:
	var slot := _selected_slot()
	if slot.is_empty():
		_status_label.text = "Select a slot to delete."
		return
	var result = await _cloud.saves.delete(slot)
	if result.success:
		_status_label.text = "Deleted %s (its history stays restorable)." % slot
		_refresh_slots()
	else:
		_show_error("Delete failed", result.error)


func _on_restore_pressed() -> void:
	var slot := _selected_slot()
	var selected := _history_list.get_selected_items()
	if slot.is_empty() or selected.is_empty():
		_status_label.text = "Select a slot and one of its versions."
		return
	var version: int = _versions[selected[0]]
	var result = await _cloud.saves.restore(slot, version)
	if result.success:
		_status_label.text = (
			"Restored version %d of %s as version %s." % [version, slot, result.version]
		)
		_refresh_slots()
	else:
		_show_error("Restore failed", result.error)


func _on_sync_now_pressed() -> void:
	var result = await _cloud.saves.sync_now()
	if result.success:
		_status_label.text = "Uploaded %d, %d still queued." % [result.uploaded, result.pending]
	else:
		_show_error("Sync failed", result.error)


func _on_auto_sync_toggled(enabled: bool) -> void:
	_cloud.saves.enable_auto_sync(enabled)


func _on_move_pressed() -> void:
	_position = Vector3(randf_range(-50, 50), 0, randf_range(-50, 50)).snapped(Vector3.ONE * 0.5)
	_update_position_label()


func _on_slot_selected(index: int) -> void:
	var slot: String = _slot_names[index]
	_slot_edit.text = slot
	_history_list.clear()
	_versions.clear()
	var result = await _cloud.saves.history(slot)
	if not result.success:
		_show_error("History failed", result.error)
		return
	for entry in result:
		_versions.append(int(entry.version))
		_history_list.add_item(
			"v%d  %s  %d B  %s" % [entry.version, entry.kind, entry.size, _time(entry.created_at)]
		)


func _refresh_slots() -> void:
	var saves_list = await _cloud.saves.list()
	if not saves_list.success:
		_show_error("Listing failed", saves_list.error)
		return
	_slot_list.clear()
	_slot_names.clear()
	_history_list.clear()
	for s in saves_list:
		_slot_names.append(str(s.name))
		var level = s.metadata.get("level", "?") if s.metadata is Dictionary else "?"
		_slot_list.add_item(
			"%s  v%d  level %s  %d B  %s" % [s.name, s.version, level, s.size, _time(s.timestamp)]
		)
	_quota_label.text = "%d of %d bytes used" % [saves_list.used_bytes, saves_list.quota_bytes]


func _on_save_completed(slot: String, info: Dictionary) -> void:
	_status_label.text = "Uploaded %s version %s." % [slot, info.get("version", "?")]


func _on_save_failed(slot: String, error: Dictionary) -> void:
	_show_error("Upload of %s failed" % slot, error)


func _on_conflict_detected(slot: String, local: Variant, remote: Variant) -> void:
	_conflicts.append([slot, local, remote])
	if not _conflict_dialog.visible:
		_show_next_conflict()


func _on_conflict_resolved(slot: String, info: Dictionary) -> void:
	_status_label.text = "Conflict on %s settled: version %s." % [slot, info.get("version", "?")]
	_refresh_slots()


func _show_next_conflict() -> void:
	if _conflicts.is_empty():
		return
	var conflict: Array = _conflicts[0]
	var summaries := [conflict[0], _summary(conflict[1]), _summary(conflict[2])]
	_conflict_dialog.dialog_text = CONFLICT_TEXT % summaries
	_conflict_dialog.popup_centered()


func _resolve_conflict(keep_local: bool) -> void:
	if _conflicts.is_empty():
		return
	var conflict: Array = _conflicts.pop_front()
	var chosen = conflict[1] if keep_local else conflict[2]
	var result = await _cloud.saves.resolve_conflict(conflict[0], chosen)
	if not result.success:
		_show_error("Resolving the conflict failed", result.error)
	_show_next_conflict()


func _slot() -> String:
	var slot := _slot_edit.text.strip_edges()
	return slot if not slot.is_empty() else "slot1"


func _selected_slot() -> String:
	var selected := _slot_list.get_selected_items()
	return _slot_names[selected[0]] if not selected.is_empty() else ""


func _update_position_label() -> void:
	_position_label.text = str(_position)


func _summary(data: Variant) -> String:
	if data is Dictionary:
		return "level %s at %s" % [data.get("level", "?"), data.get("position", "?")]
	return str(data)


## Server times are unix milliseconds; anything else is shown as is.
func _time(value: Variant) -> String:
	if value is int or value is float:
		return Time.get_datetime_string_from_unix_time(int(value / 1000), true)
	return str(value)


func _show_error(what: String, error: Dictionary) -> void:
	_status_label.text = "%s: %s (%s)" % [what, error.get("message", ""), error.get("code", "")]
