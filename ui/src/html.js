// Preact with htm: components are plain functions returning tagged-template markup.
import { h } from "preact";
import htm from "htm";

export const html = htm.bind(h);
