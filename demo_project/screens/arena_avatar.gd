extends Node2D
## One player's square in the arena. Its owner (the peer named by the node) moves it; the
## MultiplayerSynchronizer child replicates `position` from the owner to the other peers.

const SPEED := 240.0


func _enter_tree() -> void:
	# Before the synchronizer is ready, so it replicates from the right peer.
	set_multiplayer_authority(name.to_int())


func _ready() -> void:
	$Label.text = "peer %s" % name
	if is_multiplayer_authority():
		$Body.color = Color(0.3, 0.8, 0.4)


func _process(delta: float) -> void:
	if not is_multiplayer_authority():
		return
	var direction := Input.get_vector("ui_left", "ui_right", "ui_up", "ui_down")
	position += direction * SPEED * delta
