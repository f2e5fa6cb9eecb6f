/* commands.h — one entry point per CLI command, each in its own cmd_*.c.
 * argv holds the words after the command name; the return value is the
 * process exit status. */
#ifndef NF_COMMANDS_H
#define NF_COMMANDS_H

#include "protocol.h"

int cmd_generate(int argc, char **argv, NfOut *out);
int cmd_chat(int argc, char **argv, NfOut *out);
int cmd_info(int argc, char **argv, NfOut *out);
int cmd_tokenize(int argc, char **argv, NfOut *out);
int cmd_ingest(int argc, char **argv, NfOut *out);
int cmd_tokenizer_train(int argc, char **argv, NfOut *out);
int cmd_train(int argc, char **argv, NfOut *out);
int cmd_eval(int argc, char **argv, NfOut *out);
int cmd_export(int argc, char **argv, NfOut *out);
int cmd_import(int argc, char **argv, NfOut *out);
int cmd_serve(int argc, char **argv, NfOut *out);
/* train's flags checked as cmd_train checks them, without running: 0, or -1 with the reason */
int train_command_check(int argc, char **argv, NfError *err);
int cmd_benchmark(int argc, char **argv, NfOut *out);

#endif
