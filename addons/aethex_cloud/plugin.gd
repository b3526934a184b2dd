@tool
extends EditorPlugin
## Adds the AeThex Cloud dock: server URL, client key and a developer sign-in.

const Dock := preload("res://addons/aethex_cloud/dock.gd")

var _dock: Control


func _enter_tree() -> void:
	_dock = Dock.new()
	_dock.name = "AeThex Cloud"
	add_control_to_dock(DOCK_SLOT_RIGHT_UL, _dock)


func _exit_tree() -> void:
	if _dock != null:
		remove_control_from_docks(_dock)
		_dock.queue_free()
		_dock = null
