//! A Dockerfile parser of our own, written to behave like BuildKit's Dockerfile frontend.
//!
//! No maintained Rust crate parses Dockerfiles the way BuildKit does (line continuations,
//! parser directives, JSON-or-shell forms, `--flags`, heredocs, its shell-like variable
//! expansion), so this crate does it, checked against BuildKit's own parser test cases.
//!
//! - [`parse_ast`] gives BuildKit's low level tree, one [`Node`] per instruction, and its dump
//!   ([`Ast::dump`]);
//! - [`Dockerfile::parse`] gives build stages of typed instructions ([`Kind`]), checked as
//!   BuildKit checks them, nothing expanded;
//! - [`expand`], [`expand_words`] and [`Instruction::expanded`] expand variables as BuildKit's
//!   shell lexer does;
//! - [`Ignore`] reads `.dockerignore` files.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod ast;
mod error;
mod ignore;
mod lex;
mod typed;

pub use ast::{Ast, Directives, Heredoc, Node, parse_ast};
pub use error::Error;
pub use ignore::Ignore;
pub use lex::{expand, expand_words};
pub use typed::{Command, CopySpec, Dockerfile, Healthcheck, Instruction, Kind, Stage};
