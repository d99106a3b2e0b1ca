"""The fleet's own MQTT broker: running mosquitto (or amqtt) and its logins and ACLs."""
