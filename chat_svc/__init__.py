"""chat_svc: `ConversationService` on MongoDB — conversations, messages and live transcripts."""
