/* fake_open.c: a broker that lets every connection in (fake_open.h). */
#include "fake_open.h"

/* Weak: a test that scripts its opens (by port, say) defines its own. */
__attribute__((weak)) int __wrap_amqp_socket_open_noblock(amqp_socket_t *s, const char *host,
                                                          int port, const struct timeval *tv)
{
	return AMQP_STATUS_OK;
}

amqp_rpc_reply_t __wrap_amqp_login_with_properties(amqp_connection_state_t c, const char *vhost,
                                                   int channel_max, int frame_max, int heartbeat,
                                                   const amqp_table_t *props,
                                                   amqp_sasl_method_enum method, ...)
{
	return (amqp_rpc_reply_t){.reply_type = AMQP_RESPONSE_NORMAL};
}

amqp_channel_open_ok_t *__wrap_amqp_channel_open(amqp_connection_state_t c, amqp_channel_t ch)
{
	static amqp_channel_open_ok_t ok;

	return &ok;
}

amqp_confirm_select_ok_t *__wrap_amqp_confirm_select(amqp_connection_state_t c, amqp_channel_t ch)
{
	static amqp_confirm_select_ok_t ok;

	return &ok;
}

amqp_rpc_reply_t __wrap_amqp_channel_close(amqp_connection_state_t c, amqp_channel_t ch, int code)
{
	return (amqp_rpc_reply_t){.reply_type = AMQP_RESPONSE_NORMAL};
}

amqp_rpc_reply_t __wrap_amqp_connection_close(amqp_connection_state_t c, int code)
{
	return (amqp_rpc_reply_t){.reply_type = AMQP_RESPONSE_NORMAL};
}
