-- What a stored message is: a chat, or a notification (in a user's channel).
ALTER TABLE messages ADD COLUMN kind TEXT NOT NULL DEFAULT 'chat';
