include $(sort $(wildcard $(BR2_EXTERNAL_HAKEYS_PATH)/package/*/*.mk))
